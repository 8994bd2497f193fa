"""The process at run time: settings and flags, admission and drain, queue wait, heap trimming."""
