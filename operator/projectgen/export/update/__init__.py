"""Day two: deliveries after the first, as a three-way merge.

`merge` is the merge over trees (local git objects only, no forge, no network of its own);
the delivery decision and the pull-request record sit beside it. The forges add only their
pull-request calls (`export/publish/`).
"""
