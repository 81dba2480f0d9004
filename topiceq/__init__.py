"""topiceq: the `topiceq` command line. The work lives in `pipeline/` (data stages), `topicrnn/`
(sequence models) and `flows/` (Prefect flows); this package only parses arguments and dispatches."""
