"""The web UI: playground, models, runs, monitor. Pages are static HTML + a little vanilla JS (shipped in
the wheel, no Node build, no CDN); data comes from a small JSON API under /ui/api with the server's auth.
"""
