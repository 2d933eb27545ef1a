"""Analysis of runs: statistics now; diversity and credit assignment build on these."""
