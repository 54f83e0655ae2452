"""The synthetic world: scenes with known object masks (:mod:`.scenes`), their evaluation
datasets (:mod:`.data`), and the training (:mod:`.train`) and quality check (:mod:`.quality`) of
the bundled ``mini`` CLIP. Uses the library (:mod:`nibcore`); the library never imports it."""
