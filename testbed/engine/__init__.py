"""Running cases: one case (runner), a matrix, Ray, search, bisection, the nightly steps, the soak and the benchmarks."""
