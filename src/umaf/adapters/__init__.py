"""LoRA adapters as plain PEFT folders: reading them and their ΔW (``peft_io``), and the oracle LoRAs
trained per (target, capability) that generated adapters are learnt from and measured against
(``oracles``)."""

from umaf.adapters.oracles import (
    ORACLE_FILE,
    OracleConfig,
    OracleEntry,
    build_library,
    default_config,
    find_oracle,
    fit_oracle,
    library,
    library_dir,
    oracle_dir,
    read_oracle_meta,
    train_oracle,
)
from umaf.adapters.peft_io import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    check_adapter_fits,
    check_plain_lora,
    check_target_modules,
    delta_weights,
    linear_module_names,
    lora_factors,
    preserved,
    read_adapter,
)

__all__ = [
    "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "ORACLE_FILE", "OracleConfig", "OracleEntry", "build_library",
    "check_adapter_fits", "check_plain_lora", "check_target_modules", "default_config", "delta_weights",
    "find_oracle", "fit_oracle", "library", "library_dir", "linear_module_names", "lora_factors",
    "oracle_dir", "preserved", "read_adapter", "read_oracle_meta", "train_oracle",
]
