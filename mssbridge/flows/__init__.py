"""The flows: the only place that joins the Matrix side, the mail side and the store."""
