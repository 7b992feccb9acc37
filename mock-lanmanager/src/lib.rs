//! allex-lanmanager (work in progress).
