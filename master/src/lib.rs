//! allex-master (work in progress).
