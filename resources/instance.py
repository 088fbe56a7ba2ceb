"""Prepare the local Dagster instance directory under ADAS_HOME."""

import os
import shutil
from pathlib import Path

from adas.packaging.keys import init_local_keys
from adas.packaging.trust import trust_file_path
from adas.settings import REPO_ROOT, AdasHome

LOCAL_INSTANCE_YAML = REPO_ROOT / "deploy" / "local" / "dagster.yaml"


def prepare_local_instance(home: AdasHome) -> Path:
    """Create ``$ADAS_HOME/dagster`` with the local dagster.yaml and point DAGSTER_HOME at it, and
    the local signing key with the trust file that vouches for it (``adas-registry keys init``:
    made once, then left alone; packing never makes a key)."""
    home.ensure()
    init_local_keys(home.keys, trust_file_path(home))
    # Always refreshed from the repository: the instance config is code, not local state.
    shutil.copyfile(LOCAL_INSTANCE_YAML, home.dagster_home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home.dagster_home)
    os.environ["ADAS_HOME"] = str(home.root)
    return home.dagster_home
