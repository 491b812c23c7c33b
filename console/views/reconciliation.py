import streamlit as st

st.title("reconciliation")
