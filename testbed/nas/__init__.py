"""NAS backends. `vm`: a guest running kernel nfsd, LIO (targetcli) and vblade on its own data disk."""
