from setuptools import setup

setup(
    name="vlr-toolkit",
    version="0.1.0",
    description="Visual language recognition in plain PyTorch: sign language translation and lip reading",
    python_requires=">=3.10",
    packages=["dataset", "modelling", "utils"],
    py_modules=["training", "prediction", "extract_feature"],
    install_requires=[
        "torch>=2.4,<3",
        "torchvision>=0.19",
        "transformers>=4.40",
        "sentencepiece>=0.2",
        "safetensors>=0.4",
        "sacrebleu>=2.4,<3",
        "rouge-score>=0.1.2",
        "decord>=0.6",  # video decoding
        "av>=12",  # video encoding for the demo corpora
        "numpy>=1.24",
        "Pillow>=10",  # PNG frames (Phoenix folders, SLRT zips)
        "PyYAML>=6",
        "tensorboard>=2.14",
        "tqdm>=4.60",
        "matplotlib>=3.7",  # python -m utils.plots: learning curves, CTC alignments, confusions
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6.100", "scikit-image>=0.22"],  # skimage.data.astronaut(): a real face
        # mouth crops (python -m dataset.preprocess_lip): mediapipe 0.10.14 has the solutions API and its wheel
        # carries the face mesh models, so it runs offline
        "lip": ["mediapipe==0.10.14"],
        # the reference CTC beam search in benchmarks/ctc_decoding.py. It needs numpy < 2, which requirements.txt's
        # pin rules out: install it without that file (numpy 1.26.4 here, on which the whole test suite passes)
        "bench": ["pyctcdecode>=0.5"],
    },
)
