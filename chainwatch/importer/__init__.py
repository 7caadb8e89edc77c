"""`chainwatch import`: history from spreadsheets and ERP exports into the contract.

`tables` reads CSV/XLSX/NDJSON rows, `mapper` turns a row into a record by a
mapping file (`schemas.import_mapping`), `pipeline` validates each record with
the contract's own `decode_input`, `outputs` writes a replay scenario or
publishes to Kafka, and `run` ties one import together.
"""
