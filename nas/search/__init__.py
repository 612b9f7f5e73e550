"""Search: controller, searcher, scheduler and Pareto maths."""
