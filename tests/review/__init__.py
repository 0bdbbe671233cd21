"""The review loop: queue, store, page, export and the browser test."""
