"""peerlink: the API that runs peer support programs in prisons and jails."""
