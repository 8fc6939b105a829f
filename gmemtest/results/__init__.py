"""What a run produced and how it is judged and shown: outcomes, kernel health findings, run
reports, KTAP and JUnit, and the renderers of a matrix."""
