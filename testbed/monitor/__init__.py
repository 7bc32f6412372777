"""Liveness and telemetry during a case: agent telemetry, workload progress, ping, QMP status, QEMU CPU, consoles."""
