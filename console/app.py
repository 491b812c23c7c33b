"""The console's entry point (`dotshop console` runs `streamlit run console/app.py`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from console import auth, data

VIEWS = Path(__file__).with_name("views")

st.set_page_config(page_title="dotshop console", page_icon=":material/storefront:", layout="wide")
data.serve_process_metrics()
operator = auth.signed_in()

pages = [
    st.Page(VIEWS / "overview.py", title="Overview", icon=":material/traffic:", default=True),
    st.Page(VIEWS / "reconciliation.py", title="Reconciliation", icon=":material/balance:"),
    st.Page(VIEWS / "inventory.py", title="Inventory & sync", icon=":material/inventory_2:"),
    st.Page(VIEWS / "orders.py", title="Orders", icon=":material/receipt_long:"),
    st.Page(VIEWS / "outbox.py", title="Outbox", icon=":material/outbox:"),
    st.Page(VIEWS / "alerts.py", title="Alerts & runbooks", icon=":material/notifications:"),
]
page = st.navigation(pages)
with st.sidebar:
    st.caption(f"Signed in as **{operator.name}** ({operator.role})")
    st.button("Sign out", on_click=auth.sign_out, key="sign_out")
page.run()
