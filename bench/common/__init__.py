"""What the benchmarks share: where the platform's servers are, throwaway databases, server processes,
MLflow's virtualenv and the machine's load."""
