import streamlit as st

st.title("Reconciliation")
