"""Pure statistics (numpy/scipy only): divergences, bounds, allocations, thresholds."""
