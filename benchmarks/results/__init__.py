"""What a run writes: results.md/json/csv and the figures, the HTML page, and the claims across run folders."""
