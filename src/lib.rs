//! recurrent-depth
