"""Tools of the full study: download and verify LLaVA-1.5's data (download, manifests/) and fetch the real
backbones at pinned revisions (checkpoints)."""
