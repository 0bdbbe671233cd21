"""The review loop: referred answers reach a dermatologist (the page), confirmed
diagnoses go back into the data (`review export`)."""
