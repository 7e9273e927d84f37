"""`make bench-learning`: the nested-learning benchmark (issue 3). See bench_learning.run."""
