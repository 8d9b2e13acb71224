"""The run stage: a config and its images in, result rows out (stored as they arrive, read back as `RunResults`).

Config (`config`, `config_file`, `config_schema`, `config_lines`, `defaults`), backends and the emulators they
talk to (`backends`, `emulation`, `facts`, `metadata_modes`), requests and their plans (`calls`, `plans`,
`local_executor`, `ray_executor`), the run store (`store`, `store_repair`), what the run measures of each image
(`groups`) and the hand-off to the analysis (`results`, built by `execute.execute_run`).
"""
