//! allex-e2e (work in progress).
