"""The operator console: a Streamlit multipage app (`dotshop console`). Pages read through core
query functions and act through core.operator_actions; no business rule or SQL lives here."""
