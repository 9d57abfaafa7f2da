"""Small pure helpers shared by every layer (address ordering, workload-interface sysctls)."""
