"""Upload an exported folder to the Hugging Face Hub (``pip install "ebmssl[hf]"``), in one commit.

``upload_folder`` makes a single commit, so the repository gets the whole folder or nothing. A hub that
cannot be reached (no network, a proxy, ``HF_HUB_OFFLINE=1``) or that refuses the upload (no token, no
write access) is a :class:`HubUploadError` naming the cause and the fix; the exported folder stays
complete on disk for a later ``hf upload``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ebmssl.extras import require
from ebmssl.registry import ConfigError


class HubUploadError(ConfigError):
    """The upload did not happen; the message says why and what to do."""


def push_folder(folder: Path, repo_id: str, *, private: bool = False, endpoint: str | None = None, token: str | None = None) -> str:
    """Create ``repo_id`` (a model repository, kept if it exists) and upload ``folder`` in one commit; its URL."""
    hub = require("huggingface_hub", "hf", "--push-to-hub", "--push-to-hub")
    later = f"The exported folder {folder} is complete: upload it later with `hf upload {repo_id} {folder} .`."
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise HubUploadError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set, so the hub is not contacted. "
                             f"Unset it on a machine with network access. {later}")
    api = hub.HfApi(endpoint=endpoint, token=token)
    url = endpoint or hub.constants.ENDPOINT
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message="Upload an ebmssl self-supervised backbone")
    except hub.errors.HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        fix = ("log in with `hf auth login` (or set HF_TOKEN) with a token that can write to this repository"
               if status in (401, 403) else "check the repository id (owner/name) and your access to it")
        raise HubUploadError(f"--push-to-hub {repo_id}: the hub at {url} refused the upload (HTTP {status}): "
                             f"{str(error).splitlines()[0]}. Fix: {fix}. {later}") from error
    except Exception as error:  # connection refused, DNS, timeouts, proxies: the network is the problem
        raise HubUploadError(
            f"--push-to-hub {repo_id}: cannot reach the Hugging Face Hub at {url} over the network "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no detail'}). Fix: connect this "
            f"machine to the internet (or set HTTPS_PROXY / HF_ENDPOINT), then rerun. {later}"
        ) from error
    return str(getattr(info, "commit_url", None) or f"{url}/{repo_id}")
