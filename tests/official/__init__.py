"""Plain-Python transcriptions of the official training code, written from reading it (see each
module's docstring for the repository and file), against which the tests hold this project's recipes."""
