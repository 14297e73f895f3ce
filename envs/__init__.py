"""Gymnasium simulation of shoppers (the ranking MDP of DESIGN.md). Built in issue 3."""
