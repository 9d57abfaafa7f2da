"""Small pure helpers shared by every layer (CIDR maths, clocks, delta tracking)."""
