"""Templates for the quiz export (quiz.html, handout.tex); a package so that they ship as package data."""
