from qa.analysis import analyze, fold, tokenize


def test_elisions_accents_stop_words_and_stems():
    assert analyze("Quand le bureau de l'UE a-t-il ouvert à Almaty ?") == ["bureau", "ue", "ouvert", "almaty"]
    assert analyze("la délégation de l’UE") == analyze("LA DELEGATION DE L'UE") == ["deleg", "ue"]
    assert analyze("les bureaux") == analyze("le bureau")


def test_english_function_words_are_dropped():
    assert analyze("When did the EU office open in Almaty?") == ["eu", "offic", "open", "almaty"]


def test_fold_and_tokenize():
    assert fold("Élysée Œuvre") == "elysee œuvre"
    assert tokenize("jusqu'à l’an 2000, Nur-Sultan") == ["à", "an", "2000", "nur", "sultan"]
