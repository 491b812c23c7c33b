import streamlit as st

st.title("inventory")
