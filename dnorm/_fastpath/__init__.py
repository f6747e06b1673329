"""Backend fast paths (torch's fused kernels, Dask chunk by chunk), checked against the array-API kernels."""
