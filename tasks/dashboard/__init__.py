"""``faspq dashboard``: a web page of the transfers in Redis, live, with their rate and cancel controls.

feed.py turns the events already in Redis into table rows (pushed as server-sent events), auth.py keeps the page
and its endpoints behind a token, app.py serves them (aiohttp), static/ holds the page itself (plain HTML/JS).
"""
