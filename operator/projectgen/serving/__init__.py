"""The operator's HTTPS side: the aggregated download API and the createdBy admission webhook."""
