"""The wire formats of the model servers membershield audits."""

API_FORMATS = ("membershield", "mlflow", "kserve-v2")
