"""Hub-ready export of a trained run: weights in their library's format, config.json, model card, upload."""

from ebmssl.hub.export import export_run, load_run_backbone
from ebmssl.hub.push import HubUploadError, push_folder

__all__ = ["HubUploadError", "export_run", "load_run_backbone", "push_folder"]
