"""The code behind the book's chapters: theory helpers, the paper's tables and labels, generated
prose, figures, the explorer and the sanity checks. Uses the library (:mod:`nibcore`) and the
synthetic world (:mod:`nibcore.world`); nothing in the library imports it."""
