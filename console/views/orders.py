import streamlit as st

st.title("Orders")
