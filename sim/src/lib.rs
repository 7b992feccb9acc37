//! allex-sim (work in progress).
