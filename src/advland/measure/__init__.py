"""Measurements of trained models: accuracies and gaps (evaluate), Hessian spectra (hessian,
with closed forms in theory), loss landscapes (landscape), and the loop over a run's seeds
with their mean and confidence interval (perseed, aggregate)."""
