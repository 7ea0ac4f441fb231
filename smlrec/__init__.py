"""smlrec: a recommender service kept fresh by Sequential Meta-Learning retraining."""
