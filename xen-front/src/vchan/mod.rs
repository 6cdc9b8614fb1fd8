//! vchan (libxenvchan-compatible byte channels over shared pages). See issue 9.
