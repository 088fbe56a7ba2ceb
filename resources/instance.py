"""Prepare the local Dagster instance directory under ADAS_HOME."""

import os
import shutil
from pathlib import Path

from adas.settings import REPO_ROOT, AdasHome

LOCAL_INSTANCE_YAML = REPO_ROOT / "deploy" / "local" / "dagster.yaml"


def prepare_local_instance(home: AdasHome) -> Path:
    """Create ``$ADAS_HOME/dagster`` with the local dagster.yaml and point DAGSTER_HOME at it."""
    home.ensure()
    # Always refreshed from the repository: the instance config is code, not local state.
    shutil.copyfile(LOCAL_INSTANCE_YAML, home.dagster_home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home.dagster_home)
    os.environ["ADAS_HOME"] = str(home.root)
    return home.dagster_home
