"""How we measure: metrics, offline evaluation on whole-catalogue labels, logged recall, explanatory probes."""
