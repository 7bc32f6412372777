"""The VM runtime: QEMU argv, accelerator probe, QMP, serial console logs, and the guest agent channel."""
