"""Which module draws which picture: one module per question, none imports matplotlib before it draws.

- `toolkit`: how a figure is laid out and saved (PlotData, formats, fonts, placement in inches, atomic writes);
- `labels`: what each token is called on an axis, and how many of those labels fit;
- `inspect`: what one inspected text looks like (attention, position similarity, embedding parts);
- `compare`: how several models differ, in one figure;
- `stats`: which heads do what over a corpus, as layers x heads heatmaps.
"""
