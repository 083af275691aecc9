"""What we run and what it showed: presets as data, algorithm comparisons, their plots."""
