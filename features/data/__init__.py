"""Video data: EPIC-Kitchens MM-SADA domains and procedurally generated video domains (same layout)."""

from features.data.shared import SHARED_DATA_ENV, find_shared_data, shared_data_dir

__all__ = ["SHARED_DATA_ENV", "find_shared_data", "shared_data_dir"]
