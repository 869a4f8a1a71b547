"""The run's methods text and its references: ``CITATION.md`` and ``CITATION.bib``.

As fMRIPrep writes ``logs/CITATION.md``, every run writes a methods paragraph per stage that a
lab can paste into a paper: which floor, classical and learned methods ran, with which library
versions, the values its tuning cards chose (``results/tuning/<stage>-<method>.json``, rule
``tune``) and the training budget and selection its model cards record
(``models/<stage>-<method>.json``, rule ``train``), each claim cited as ``[@key]`` (pandoc's
citation syntax) with only the cited entries in the ``.bib`` beside it.

What a method cites is declared with it (:attr:`mrichain.plan.stages.Method.cite`,
:attr:`mrichain.plan.stages.Stage.cite`); this module holds the BibTeX entries
(:data:`BIBTEX`), which of them cite a library (:data:`LIBRARIES`: its version goes in the
text), and the words. The run's facts come in one JSON manifest (:func:`citation_manifest`,
rule ``citation_manifest``) read by :func:`write_citation` (``mrichain citation``)::

    {"mrichain": "0.1.0", "seed": 20261126,
     "cohort": {config cohort section}, "acquire": {config acquire section},
     "subjects": {"train": 6, "val": 2, "test": 2, "age_only": 6},
     "error_budget": {"sweep": true, "oracle": true},
     "stages": {"<stage>": {"methods": [...], "feed": "<method>" | null,
                            "params": {"<method>": {config params}},
                            "models": {"<method>": "models/<stage>-<method>.json"},
                            "tuning": {"<method>": "results/tuning/<stage>-<method>.json"}}},
     "real": {"kind": "bids" | "fastmri", "n_inputs": 3, "stages": [...], "output_dir": "...",
              "voxel_mm": 2.0, "accelerations": {"R4": [4.0, 0.08]}}}   (only with real inputs)

Library versions are those of the process writing the text (:func:`library_versions`, from the
installed distributions' metadata: nothing is imported), which is the environment the run's
jobs ran in; a model card trained under other versions says so in the text.
Standard library only at import time.
"""
from __future__ import annotations

import json
import os
import re
from importlib import metadata
from pathlib import Path

from mrichain import UserError

BIBTEX: dict[str, str] = {
    # --- acquisition and reconstruction -------------------------------------------------------
    "zbontar2018fastmri": """@misc{zbontar2018fastmri,
  title = {{fastMRI}: An Open Dataset and Benchmarks for Accelerated {MRI}},
  author = {Zbontar, Jure and Knoll, Florian and Sriram, Anuroop and Murrell, Tullie and Huang, Zhengnan and Muckley, Matthew J. and Defazio, Aaron and others},
  year = {2018},
  eprint = {1811.08839},
  archivePrefix = {arXiv},
  doi = {10.48550/arXiv.1811.08839}
}""",
    "atkinson1997automatic": """@article{atkinson1997automatic,
  title = {Automatic correction of motion artifacts in magnetic resonance images using an entropy focus criterion},
  author = {Atkinson, David and Hill, Derek L. G. and Stoyle, Peter N. R. and Summers, Paul E. and Keevil, Stephen F.},
  journal = {IEEE Transactions on Medical Imaging},
  volume = {16},
  number = {6},
  pages = {903--910},
  year = {1997}
}""",
    "shaw2019mri": """@inproceedings{shaw2019mri,
  title = {{MRI} k-Space Motion Artefact Augmentation: Model Robustness and Task-Specific Uncertainty},
  author = {Shaw, Richard and Sudre, Carole and Ourselin, Sebastien and Cardoso, M. Jorge},
  booktitle = {Proceedings of The 2nd International Conference on Medical Imaging with Deep Learning},
  series = {Proceedings of Machine Learning Research},
  volume = {102},
  pages = {427--436},
  year = {2019}
}""",
    "johnson2019conditional": """@article{johnson2019conditional,
  title = {Conditional generative adversarial network for {3D} rigid-body motion correction in {MRI}},
  author = {Johnson, Patricia M. and Drangova, Maria},
  journal = {Magnetic Resonance in Medicine},
  volume = {82},
  number = {3},
  pages = {901--910},
  year = {2019}
}""",
    "lustig2007sparse": """@article{lustig2007sparse,
  title = {Sparse {MRI}: The application of compressed sensing for rapid {MR} imaging},
  author = {Lustig, Michael and Donoho, David and Pauly, John M.},
  journal = {Magnetic Resonance in Medicine},
  volume = {58},
  number = {6},
  pages = {1182--1195},
  year = {2007},
  doi = {10.1002/mrm.21391}
}""",
    "uecker2014espirit": """@article{uecker2014espirit,
  title = {{ESPIRiT} -- an eigenvalue approach to autocalibrating parallel {MRI}: where {SENSE} meets {GRAPPA}},
  author = {Uecker, Martin and Lai, Peng and Murphy, Mark J. and Virtue, Patrick and Elad, Michael and Pauly, John M. and Vasanawala, Shreyas S. and Lustig, Michael},
  journal = {Magnetic Resonance in Medicine},
  volume = {71},
  number = {3},
  pages = {990--1001},
  year = {2014},
  doi = {10.1002/mrm.24751}
}""",
    "shin2014sake": """@article{shin2014sake,
  title = {Calibrationless parallel imaging reconstruction based on structured low-rank matrix completion},
  author = {Shin, Peter J. and Larson, Peder E. Z. and Ohliger, Michael A. and Elad, Michael and Pauly, John M. and Vigneron, Daniel B. and Lustig, Michael},
  journal = {Magnetic Resonance in Medicine},
  volume = {72},
  number = {4},
  pages = {959--970},
  year = {2014},
  doi = {10.1002/mrm.24997}
}""",
    "ong2019sigpy": """@inproceedings{ong2019sigpy,
  title = {{SigPy}: A Python Package for High Performance Iterative Reconstruction},
  author = {Ong, Frank and Lustig, Michael},
  booktitle = {Proceedings of the 27th Annual Meeting of the International Society for Magnetic Resonance in Medicine (ISMRM)},
  address = {Montr{\\'e}al, QC, Canada},
  note = {Abstract 4819},
  year = {2019}
}""",
    "sriram2020endtoend": """@inproceedings{sriram2020endtoend,
  title = {End-to-End Variational Networks for Accelerated {MRI} Reconstruction},
  author = {Sriram, Anuroop and Zbontar, Jure and Murrell, Tullie and Defazio, Aaron and Zitnick, C. Lawrence and Yakubova, Nafissa and Knoll, Florian and Johnson, Patricia},
  booktitle = {Medical Image Computing and Computer Assisted Intervention -- {MICCAI} 2020},
  series = {Lecture Notes in Computer Science},
  volume = {12262},
  pages = {64--73},
  publisher = {Springer},
  year = {2020},
  doi = {10.1007/978-3-030-59713-9_7}
}""",
    # --- denoising, registration, segmentation ------------------------------------------------
    "manjon2010adaptive": """@article{manjon2010adaptive,
  title = {Adaptive non-local means denoising of {MR} images with spatially varying noise levels},
  author = {Manj{\\'o}n, Jos{\\'e} V. and Coup{\\'e}, Pierrick and Mart{\\'i}-Bonmat{\\'i}, Luis and Collins, D. Louis and Robles, Montserrat},
  journal = {Journal of Magnetic Resonance Imaging},
  volume = {31},
  number = {1},
  pages = {192--203},
  year = {2010},
  doi = {10.1002/jmri.22003}
}""",
    "zhang2017beyond": """@article{zhang2017beyond,
  title = {Beyond a {Gaussian} Denoiser: Residual Learning of Deep {CNN} for Image Denoising},
  author = {Zhang, Kai and Zuo, Wangmeng and Chen, Yunjin and Meng, Deyu and Zhang, Lei},
  journal = {IEEE Transactions on Image Processing},
  volume = {26},
  number = {7},
  pages = {3142--3155},
  year = {2017},
  doi = {10.1109/TIP.2017.2662206}
}""",
    "avants2008symmetric": """@article{avants2008symmetric,
  title = {Symmetric diffeomorphic image registration with cross-correlation: evaluating automated labeling of elderly and neurodegenerative brain},
  author = {Avants, Brian B. and Epstein, Charles L. and Grossman, Murray and Gee, James C.},
  journal = {Medical Image Analysis},
  volume = {12},
  number = {1},
  pages = {26--41},
  year = {2008},
  doi = {10.1016/j.media.2007.06.004}
}""",
    "avants2011reproducible": """@article{avants2011reproducible,
  title = {A reproducible evaluation of {ANTs} similarity metric performance in brain image registration},
  author = {Avants, Brian B. and Tustison, Nicholas J. and Song, Gang and Cook, Philip A. and Klein, Arno and Gee, James C.},
  journal = {NeuroImage},
  volume = {54},
  number = {3},
  pages = {2033--2044},
  year = {2011},
  doi = {10.1016/j.neuroimage.2010.09.025}
}""",
    "balakrishnan2019voxelmorph": """@article{balakrishnan2019voxelmorph,
  title = {{VoxelMorph}: A Learning Framework for Deformable Medical Image Registration},
  author = {Balakrishnan, Guha and Zhao, Amy and Sabuncu, Mert R. and Guttag, John and Dalca, Adrian V.},
  journal = {IEEE Transactions on Medical Imaging},
  volume = {38},
  number = {8},
  pages = {1788--1800},
  year = {2019},
  doi = {10.1109/TMI.2019.2897538}
}""",
    "lloyd1982least": """@article{lloyd1982least,
  title = {Least squares quantization in {PCM}},
  author = {Lloyd, Stuart P.},
  journal = {IEEE Transactions on Information Theory},
  volume = {28},
  number = {2},
  pages = {129--137},
  year = {1982},
  doi = {10.1109/TIT.1982.1056489}
}""",
    "avants2011atropos": """@article{avants2011atropos,
  title = {An open source multivariate framework for n-tissue segmentation with evaluation on public data},
  author = {Avants, Brian B. and Tustison, Nicholas J. and Wu, Jue and Cook, Philip A. and Gee, James C.},
  journal = {Neuroinformatics},
  volume = {9},
  number = {4},
  pages = {381--400},
  year = {2011},
  doi = {10.1007/s12021-011-9109-y}
}""",
    "ronneberger2015unet": """@inproceedings{ronneberger2015unet,
  title = {{U-Net}: Convolutional Networks for Biomedical Image Segmentation},
  author = {Ronneberger, Olaf and Fischer, Philipp and Brox, Thomas},
  booktitle = {Medical Image Computing and Computer-Assisted Intervention -- {MICCAI} 2015},
  series = {Lecture Notes in Computer Science},
  volume = {9351},
  pages = {234--241},
  publisher = {Springer},
  year = {2015},
  doi = {10.1007/978-3-319-24574-4_28}
}""",
    "isensee2021nnunet": """@article{isensee2021nnunet,
  title = {{nnU-Net}: a self-configuring method for deep learning-based biomedical image segmentation},
  author = {Isensee, Fabian and Jaeger, Paul F. and Kohl, Simon A. A. and Petersen, Jens and Maier-Hein, Klaus H.},
  journal = {Nature Methods},
  volume = {18},
  number = {2},
  pages = {203--211},
  year = {2021},
  doi = {10.1038/s41592-020-01008-z}
}""",
    # --- brain age ----------------------------------------------------------------------------
    "peng2021accurate": """@article{peng2021accurate,
  title = {Accurate brain age prediction with lightweight deep neural networks},
  author = {Peng, Han and Gong, Weikang and Beckmann, Christian F. and Vedaldi, Andrea and Smith, Stephen M.},
  journal = {Medical Image Analysis},
  volume = {68},
  pages = {101871},
  year = {2021},
  doi = {10.1016/j.media.2020.101871}
}""",
    # --- MR fingerprinting --------------------------------------------------------------------
    "ma2013magnetic": """@article{ma2013magnetic,
  title = {Magnetic resonance fingerprinting},
  author = {Ma, Dan and Gulani, Vikas and Seiberlich, Nicole and Liu, Kecheng and Sunshine, Jeffrey L. and Duerk, Jeffrey L. and Griswold, Mark A.},
  journal = {Nature},
  volume = {495},
  number = {7440},
  pages = {187--192},
  year = {2013},
  doi = {10.1038/nature11971}
}""",
    "jiang2015mr": """@article{jiang2015mr,
  title = {{MR} fingerprinting using fast imaging with steady state precession ({FISP}) with spiral readout},
  author = {Jiang, Yun and Ma, Dan and Seiberlich, Nicole and Gulani, Vikas and Griswold, Mark A.},
  journal = {Magnetic Resonance in Medicine},
  volume = {74},
  number = {6},
  pages = {1621--1631},
  year = {2015},
  doi = {10.1002/mrm.25559}
}""",
    "weigel2015extended": """@article{weigel2015extended,
  title = {Extended phase graphs: dephasing, {RF} pulses, and echoes -- pure and simple},
  author = {Weigel, Matthias},
  journal = {Journal of Magnetic Resonance Imaging},
  volume = {41},
  number = {2},
  pages = {266--295},
  year = {2015},
  doi = {10.1002/jmri.24619}
}""",
    "mcgivney2014svd": """@article{mcgivney2014svd,
  title = {{SVD} Compression for Magnetic Resonance Fingerprinting in the Time Domain},
  author = {McGivney, Debra F. and Pierre, Eric and Ma, Dan and Jiang, Yun and Saybasili, Haris and Gulani, Vikas and Griswold, Mark A.},
  journal = {IEEE Transactions on Medical Imaging},
  volume = {33},
  number = {12},
  pages = {2311--2322},
  year = {2014},
  doi = {10.1109/TMI.2014.2337321}
}""",
    "cohen2018mr": """@article{cohen2018mr,
  title = {{MR} fingerprinting Deep RecOnstruction NEtwork ({DRONE})},
  author = {Cohen, Ouri and Zhu, Bo and Rosen, Matthew S.},
  journal = {Magnetic Resonance in Medicine},
  volume = {80},
  number = {3},
  pages = {885--894},
  year = {2018},
  doi = {10.1002/mrm.27198}
}""",
    # --- template and real-input preparation --------------------------------------------------
    "fonov2009unbiased": """@article{fonov2009unbiased,
  title = {Unbiased nonlinear average age-appropriate brain templates from birth to adulthood},
  author = {Fonov, Vladimir S. and Evans, Alan C. and McKinstry, Robert C. and Almli, C. Robert and Collins, D. Louis},
  journal = {NeuroImage},
  volume = {47, Supplement 1},
  pages = {S102},
  year = {2009},
  doi = {10.1016/S1053-8119(09)70884-5}
}""",
    "fonov2011unbiased": """@article{fonov2011unbiased,
  title = {Unbiased average age-appropriate atlases for pediatric studies},
  author = {Fonov, Vladimir and Evans, Alan C. and Botteron, Kelly and Almli, C. Robert and McKinstry, Robert C. and Collins, D. Louis},
  journal = {NeuroImage},
  volume = {54},
  number = {1},
  pages = {313--327},
  year = {2011},
  doi = {10.1016/j.neuroimage.2010.07.033}
}""",
    "tustison2010n4": """@article{tustison2010n4,
  title = {{N4ITK}: Improved {N3} Bias Correction},
  author = {Tustison, Nicholas J. and Avants, Brian B. and Cook, Philip A. and Zheng, Yuanjie and Egan, Alexander and Yushkevich, Paul A. and Gee, James C.},
  journal = {IEEE Transactions on Medical Imaging},
  volume = {29},
  number = {6},
  pages = {1310--1320},
  year = {2010},
  doi = {10.1109/TMI.2010.2046908}
}""",
    "smith2002fast": """@article{smith2002fast,
  title = {Fast robust automated brain extraction},
  author = {Smith, Stephen M.},
  journal = {Human Brain Mapping},
  volume = {17},
  number = {3},
  pages = {143--155},
  year = {2002},
  doi = {10.1002/hbm.10062}
}""",
    # --- libraries ----------------------------------------------------------------------------
    "paszke2019pytorch": """@inproceedings{paszke2019pytorch,
  title = {{PyTorch}: An Imperative Style, High-Performance Deep Learning Library},
  author = {Paszke, Adam and Gross, Sam and Massa, Francisco and Lerer, Adam and Bradbury, James and Chanan, Gregory and Killeen, Trevor and Lin, Zeming and Gimelshein, Natalia and Antiga, Luca and Desmaison, Alban and K{\\"o}pf, Andreas and Yang, Edward and DeVito, Zachary and Raison, Martin and Tejani, Alykhan and Chilamkurthy, Sasank and Steiner, Benoit and Fang, Lu and Bai, Junjie and Chintala, Soumith},
  booktitle = {Advances in Neural Information Processing Systems 32},
  pages = {8024--8035},
  publisher = {Curran Associates, Inc.},
  year = {2019}
}""",
    "cardoso2022monai": """@misc{cardoso2022monai,
  title = {{MONAI}: An open-source framework for deep learning in healthcare},
  author = {Cardoso, M. Jorge and Li, Wenqi and Brown, Richard and Ma, Nic and Kerfoot, Eric and Wang, Yiheng and Murrey, Benjamin and Myronenko, Andriy and Zhao, Can and Yang, Dong and others},
  year = {2022},
  eprint = {2211.02701},
  archivePrefix = {arXiv},
  doi = {10.48550/arXiv.2211.02701}
}""",
    "tustison2021antsx": """@article{tustison2021antsx,
  title = {The {ANTsX} ecosystem for quantitative biological and medical imaging},
  author = {Tustison, Nicholas J. and Cook, Philip A. and Holbrook, Andrew J. and Johnson, Hans J. and Muschelli, John and Devenyi, Gabriel A. and Duda, Jeffrey T. and Das, Sandhitsu R. and Cullen, Nicholas C. and Gillen, Daniel L. and Yassa, Michael A. and Stone, James R. and Gee, James C. and Avants, Brian B.},
  journal = {Scientific Reports},
  volume = {11},
  pages = {9068},
  year = {2021},
  doi = {10.1038/s41598-021-87564-6}
}""",
    "pedregosa2011scikit": """@article{pedregosa2011scikit,
  title = {Scikit-learn: Machine Learning in {P}ython},
  author = {Pedregosa, Fabian and Varoquaux, Ga{\\"e}l and Gramfort, Alexandre and Michel, Vincent and Thirion, Bertrand and Grisel, Olivier and Blondel, Mathieu and Prettenhofer, Peter and Weiss, Ron and Dubourg, Vincent and Vanderplas, Jake and Passos, Alexandre and Cournapeau, David and Brucher, Matthieu and Perrot, Matthieu and Duchesnay, {\\'E}douard},
  journal = {Journal of Machine Learning Research},
  volume = {12},
  pages = {2825--2830},
  year = {2011}
}""",
    "vanderwalt2014scikit": """@article{vanderwalt2014scikit,
  title = {scikit-image: image processing in {P}ython},
  author = {van der Walt, St{\\'e}fan and Sch{\\"o}nberger, Johannes L. and Nunez-Iglesias, Juan and Boulogne, Fran{\\c{c}}ois and Warner, Joshua D. and Yager, Neil and Gouillart, Emmanuelle and Yu, Tony and {the scikit-image contributors}},
  journal = {PeerJ},
  volume = {2},
  pages = {e453},
  year = {2014},
  doi = {10.7717/peerj.453}
}""",
    "harris2020array": """@article{harris2020array,
  title = {Array programming with {NumPy}},
  author = {Harris, Charles R. and Millman, K. Jarrod and van der Walt, St{\\'e}fan J. and Gommers, Ralf and Virtanen, Pauli and Cournapeau, David and Wieser, Eric and Taylor, Julian and Berg, Sebastian and Smith, Nathaniel J. and others},
  journal = {Nature},
  volume = {585},
  number = {7825},
  pages = {357--362},
  year = {2020},
  doi = {10.1038/s41586-020-2649-2}
}""",
    "virtanen2020scipy": """@article{virtanen2020scipy,
  title = {{SciPy} 1.0: Fundamental Algorithms for Scientific Computing in {P}ython},
  author = {Virtanen, Pauli and Gommers, Ralf and Oliphant, Travis E. and Haberland, Matt and Reddy, Tyler and Cournapeau, David and Burovski, Evgeni and Peterson, Pearu and Weckesser, Warren and Bright, Jonathan and others},
  journal = {Nature Methods},
  volume = {17},
  pages = {261--272},
  year = {2020},
  doi = {10.1038/s41592-019-0686-2}
}""",
    "abraham2014machine": """@article{abraham2014machine,
  title = {Machine learning for neuroimaging with scikit-learn},
  author = {Abraham, Alexandre and Pedregosa, Fabian and Eickenberg, Michael and Gervais, Philippe and Mueller, Andreas and Kossaifi, Jean and Gramfort, Alexandre and Thirion, Bertrand and Varoquaux, Ga{\\"e}l},
  journal = {Frontiers in Neuroinformatics},
  volume = {8},
  pages = {14},
  year = {2014},
  doi = {10.3389/fninf.2014.00014}
}""",
    "molder2021sustainable": """@article{molder2021sustainable,
  title = {Sustainable data analysis with {Snakemake}},
  author = {M{\\"o}lder, Felix and Jablonski, Kim Philipp and Letcher, Brice and Hall, Michael B. and Tomkins-Tinch, Christopher H. and Sochat, Vanessa and Forster, Jan and Lee, Soohyun and Twardziok, Sven O. and Kanitz, Alexander and Wilm, Andreas and Holtgrewe, Manuel and Rahmann, Sven and Nahnsen, Sven and K{\\"o}ster, Johannes},
  journal = {F1000Research},
  volume = {10},
  pages = {33},
  year = {2021},
  doi = {10.12688/f1000research.29032.2}
}""",
    "nibabel": """@misc{nibabel,
  title = {{NiBabel}: access a cacophony of neuro-imaging file formats},
  author = {Markiewicz, Christopher J. and Brett, Matthew and Hanke, Michael and C{\\^o}t{\\'e}, Marc-Alexandre and Cipollini, Ben and McCarthy, Paul and others},
  howpublished = {Zenodo},
  url = {https://github.com/nipy/nibabel},
  doi = {10.5281/zenodo.591597}
}""",
    "dvc": """@misc{dvc,
  title = {{DVC}: Data Version Control -- Git for Data \\& Models},
  author = {{The DVC team and contributors}},
  howpublished = {Zenodo},
  url = {https://dvc.org},
  year = {2020},
  doi = {10.5281/zenodo.3677553}
}""",
}
"""BibTeX entries by key: every key a stage or method declares (:attr:`Method.cite`), and the
libraries and workflow tools the text names. Fields are left out rather than guessed."""

LIBRARIES: dict[str, tuple[str, str | None]] = {
    "mrichain": ("mrichain", None),
    "torch": ("PyTorch", "paszke2019pytorch"),
    "monai": ("MONAI", "cardoso2022monai"),
    "antspyx": ("ANTsPy (antspyx)", "tustison2021antsx"),
    "sigpy": ("SigPy", "ong2019sigpy"),
    "nibabel": ("NiBabel", "nibabel"),
    "nilearn": ("Nilearn", "abraham2014machine"),
    "scikit-image": ("scikit-image", "vanderwalt2014scikit"),
    "scikit-learn": ("scikit-learn", "pedregosa2011scikit"),
    "numpy": ("NumPy", "harris2020array"),
    "scipy": ("SciPy", "virtanen2020scipy"),
    "snakemake": ("Snakemake", "molder2021sustainable"),
    "dvc": ("DVC", "dvc"),
}
"""Distribution name -> (name in the text, its BibTeX key): the libraries whose versions the
text states. A method's cite key that is one of these keys names its implementing library."""

_LIBRARY_OF_KEY = {key: dist for dist, (_, key) in LIBRARIES.items() if key}
_VERSIONED_ENTRIES = {"nibabel": "nibabel", "dvc": "dvc"}
"""Software entries (Zenodo concept DOIs) that get the installed version as a ``version`` field."""

STAGE_TITLES = {
    "acquire": "Acquisition",
    "reconstruct": "Reconstruction",
    "denoise": "Denoising",
    "register": "Registration to the template",
    "segment": "Tissue segmentation",
    "predict": "Brain-age prediction",
    "mrf": "MR fingerprinting",
    "motion": "Motion correction",
}

DESCRIPTIONS = {
    ("reconstruct", "zerofilled"): "the zero-filled inverse Fourier transform of the acquired k-space with "
                                   "root-sum-of-squares coil combination, as in fastMRI",
    ("reconstruct", "cs"): "compressed sensing: L1-wavelet-regularised SENSE solved by proximal gradient descent, "
                           "with ESPIRiT coil sensitivities calibrated on a centre of k-space completed by SAKE",
    ("reconstruct", "varnet"): "an end-to-end variational network (cascades of learned refinements with "
                               "data consistency and a learned coil-sensitivity model)",
    ("denoise", "antsnlm"): "ANTs' adaptive non-local means denoising (DenoiseImage)",
    ("denoise", "dncnn"): "a residual denoising convolutional network (DnCNN)",
    ("register", "affine"): "an affine-only ANTs registration (rigid, then 12-parameter affine, mutual information)",
    ("register", "antssyn"): "ANTs symmetric normalisation (SyN) after an affine initialisation",
    ("register", "voxelmorph"): "an unsupervised VoxelMorph network (U-Net predicting a dense displacement field, "
                                "local normalised cross-correlation with a smoothness penalty and a Dice term "
                                "on the training labels)",
    ("segment", "kmeans"): "three-class intensity k-means inside the brain mask",
    ("segment", "atropos"): "ANTs Atropos (k-means initialisation, Markov random field prior), refined for "
                            "bias and partial volume",
    ("segment", "unet"): "a 2.5-D U-Net trained with a Dice and cross-entropy loss",
    ("predict", "mean"): "the mean age of the train split, predicted for every subject",
    ("predict", "linear"): "ridge regression on tissue volume fractions (volume / intracranial volume)",
    ("predict", "sfcn"): "the simple fully convolutional network (SFCN) on the image, with soft age-bin labels",
    ("predict", "mlp"): "an ensemble of one-hidden-layer perceptrons on tissue volume fractions",
    ("motion", "none"): "no correction: the zero-filled root-sum-of-squares image of every acquired line",
    ("motion", "autofocus"): "autofocus: each shot's in-plane translation found by minimising the image entropy "
                             "(the entropy focus criterion) and undone as a linear phase of its lines",
    ("motion", "unet"): "a residual 2-D U-Net (MONAI BasicUNet) mapping the zero-filled image of the moving head "
                        "to the still head, trained on motion simulated in k-space on the train split's still scans",
    ("mrf", "constant"): "the white-matter T1, T2 and PD assigned to every voxel (no fingerprint read)",
    ("mrf", "matching"): "dictionary matching by maximum normalised inner product",
    ("mrf", "matchingsvd"): "dictionary matching in the dictionary's SVD subspace",
    ("mrf", "drone"): "a fully connected network regressing T1 and T2 from the fingerprint (DRONE), trained on "
                      "the dictionary's atoms with added noise",
}
"""What each declared method is, as a noun phrase for the methods text (checked complete by the tests)."""

_STAGE_INTROS = {
    "reconstruct": "Images were reconstructed from each acquisition's k-space.",
    "denoise": "The reconstructions were denoised.",
    "register": "Each test subject's denoised image was registered to the MNI152NLin2009aSym template "
                "{cite}, carrying the subject's tissue labels with it.",
    "segment": "The denoised images were segmented into cerebrospinal fluid, grey matter and white matter.",
    "predict": "Brain age was predicted for every subject from its denoised image or its tissue "
               "segmentation, each model fitted on the train split.",
    "mrf": "For MR fingerprinting {cite}, inversion-prepared FISP fingerprints of each test subject's central "
           "slices were simulated from its ground-truth maps with an extended phase graph model, and T1, T2 and PD "
           "maps were estimated from them; a T1w image synthesised from each method's maps went to the "
           "segmentation feed method.",
    "motion": "Rigid head motion during the scan was simulated in k-space {cite}: the phase-encode lines were "
              "acquired in shots, a few of them with the head away from its rest pose, with coil sensitivities "
              "fixed to the scanner; each test subject's moving-head acquisition was corrected, and the corrected "
              "image went to the later stages' feed methods.",
}
_SCORED_FLOORS = {"input": "the undenoised input", "identity": "the unregistered image (identity)"}
_KIND_WORDS = {"floor": "floor", "classical": "classical method", "learned": "learned method"}
_OPTIMISERS = {"adamw": "AdamW", "sgd": "SGD"}
_NUMBERS = ("No", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten")


def _count(n: int, noun: str) -> str:
    """``Three methods`` (a sentence's first words)."""
    return f"{_NUMBERS[n] if n < len(_NUMBERS) else n} {noun}{'' if n == 1 else 's'}"


def _device(device: str) -> str:
    return "on the CPU" if device == "cpu" else f"on a CUDA GPU ({device})" if device.startswith("cuda") \
        else f"on {device}"


class CitationError(UserError, ValueError):
    """A manifest, model card or tuning card the methods text cannot be written from (unreadable,
    not a JSON object, or holding values of the wrong kind); the message names the file."""


def library_versions(dists=tuple(LIBRARIES)) -> dict[str, str]:
    """``{distribution: version}`` as the installed distributions' metadata report it
    (``importlib.metadata``), ``"not installed"`` where absent."""
    out = {}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


# ---- the manifest ------------------------------------------------------------------------------

def citation_manifest(plan, real=None) -> dict:
    """The methods text's manifest (module docstring) of a run: ``plan`` a
    :class:`mrichain.plan.manifests.Plan`, ``real`` its :class:`mrichain.realdata.plan.RealPlan`
    when real inputs are active. Import-light: the Snakefile builds it at parse time."""
    from mrichain import __version__
    from mrichain.plan import layout
    from mrichain.plan.stages import MOTION, MRF, STAGES

    cfg = plan.config
    stages = {}
    for s in STAGES:
        if not s.methods:
            continue
        methods = plan.methods(s.name)
        stages[s.name] = {
            "methods": methods,
            "feed": plan.feed(s.name) if s.has_feed else None,
            "params": {m: dict(cfg[s.name].get("params", {}).get(m, {})) for m in methods if not s.method(m).learned},
            "models": {m: plan.model(s.name, m, ".json") for m in methods if s.method(m).learned},
            "tuning": {m: layout.tuning(s.name, m) for m in methods if plan.tune_grid(s.name, m)},
        }
    if plan.motion_conditions:
        stages[MOTION] = {"methods": plan.methods(MOTION), "feed": plan.feed(MOTION),
                          "params": {m: dict(cfg[MOTION].get("params", {}).get(m, {})) for m in plan.methods(MOTION)},
                          "models": {}, "tuning": {}}
    if plan.mrf is not None:
        stages[MRF] = {"methods": list(plan.mrf.methods), "feed": None, "params": {},
                       "models": {"drone": plan.model(MRF, "drone", ".json")} if plan.mrf.trains else {},
                       "tuning": {}}
    splits = [plan.splits[s] for s in plan.subjects]
    out = {
        "mrichain": __version__,
        "seed": cfg["seed"],
        "cohort": json.loads(json.dumps(cfg["cohort"])),
        "acquire": json.loads(json.dumps(cfg["acquire"])),
        "subjects": {"train": splits.count("train"), "val": splits.count("val"), "test": splits.count("test"),
                     "age_only": len(plan.age_subjects)},
        "error_budget": {k: bool(cfg.get("error_budget", {}).get(k)) for k in ("sweep", "oracle")},
        "stages": stages,
    }
    if real is not None and real.active:
        out["real"] = {"kind": real.kind, "n_inputs": len(real.inputs), "stages": list(real.stages),
                       "output_dir": real.root, "voxel_mm": real.voxel_mm,
                       "accelerations": {k: list(v) for k, v in real.acqs.items()}}
    return out


# ---- reading cards -------------------------------------------------------------------------------

def read_json_card(path, what: str) -> dict:
    """A model or tuning card (``what`` names it in errors): a JSON object, else :class:`CitationError`."""
    from mrichain.io import load_json_object

    return load_json_object(path, what, CitationError)


# ---- words -----------------------------------------------------------------------------------------

class _Refs:
    """Citation keys in the order the text first cites them (the ``.bib`` holds exactly these)."""

    def __init__(self):
        self.keys: list[str] = []

    def __call__(self, *keys: str) -> str:
        """``[@a; @b]`` of ``keys`` (none: ``""``), recording them."""
        keys = tuple(k for k in keys if k)
        for k in keys:
            if k not in BIBTEX:
                raise KeyError(f"citation key {k!r} has no entry in mrichain.citation.BIBTEX")
            if k not in self.keys:
                self.keys.append(k)
        return "[" + "; ".join(f"@{k}" for k in keys) + "]" if keys else ""


def _fmt(value) -> str:
    """A parameter value as the text writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if value is None:
        return "none"
    return str(value)


def _assignments(values: dict) -> str:
    return ", ".join(f"{k} = {_fmt(v)}" for k, v in values.items())


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _library(dist: str, versions: dict, refs: _Refs) -> str:
    name, key = LIBRARIES[dist]
    version = versions.get(dist) or library_versions((dist,))[dist]
    ref = refs(key) if key else ""
    return f"{name} {version}" + (f" {ref}" if ref else "") if version != "not installed" \
        else f"{name} (not installed)" + (f" {ref}" if ref else "")


def _method_sentence(stage_name: str, m, versions: dict, refs: _Refs, feed: str | None) -> str:
    papers = [k for k in m.cite if k not in _LIBRARY_OF_KEY]
    libs = [_LIBRARY_OF_KEY[k] for k in m.cite if k in _LIBRARY_OF_KEY]
    desc = DESCRIPTIONS.get((stage_name, m.name), m.name)
    text = f"The {_KIND_WORDS.get(m.kind, m.kind)} `{m.name}` was {desc}"
    if papers:
        text += f" {refs(*papers)}"
    if libs:
        text += ", implemented with " + _join([_library(d, versions, refs) for d in libs])
    if m.name == feed:
        text += "; it was the feed method, whose output the next stages take"
    return text + "."


def _tuning_sentence(path, stage_name: str, method: str) -> str:
    card = read_json_card(path, "tuning card")
    try:
        for key, want in (("stage", stage_name), ("method", method)):
            if key in card and card[key] != want:
                raise CitationError(f"{path}: '{key}' is {card[key]!r}, but the run's {key} is {want!r}")
        chosen = card["chosen"]
        if not isinstance(chosen, dict) or not chosen:
            raise CitationError(f"{path}: 'chosen' must map the tuned parameters to values, got {chosen!r}")
        grid = card.get("grid") or {}
        metric = card.get("metric", "its primary score")
        n = len(card.get("subjects") or [])
        where = ", ".join(x for x in (f"{n} subject{'s' if n != 1 else ''}" if n else "", f"acquisition {card['acq']}" if card.get("acq")
                                      else "") if x)
        direction = "" if "higher_is_better" not in card else (
            " (higher is better)" if card["higher_is_better"] else " (lower is better)")
        text = (f"Its {_join(sorted(grid) or sorted(chosen))} {'was' if len(grid or chosen) == 1 else 'were'} tuned "
                f"on the validation split{f' ({where})' if where else ''} by grid search"
                + (" over " + "; ".join(f"{k} in {{{', '.join(_fmt(v) for v in vals)}}}" for k, vals in grid.items())
                   if grid else "")
                + f" for the best mean {metric}{direction}: {_assignments(chosen)} was chosen")
        if isinstance(card.get("chosen_score"), (int, float)):
            text += f" ({metric} {_fmt(float(card['chosen_score']))})"
        fixed = {k: v for k, v in (card.get("fixed_params") or {}).items() if k not in chosen}
        if fixed:
            text += f", with {_assignments(fixed)} fixed"
        return text + "."
    except CitationError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CitationError(f"{path}: not a tuning card the methods text can state ({type(exc).__name__}: {exc})") \
            from None


def _training_sentence(path, versions: dict, on: str = "on the train split") -> str:
    card = read_json_card(path, "model card")
    try:
        t = card.get("training") or {}
        parts = []
        if "epochs_run" in card:
            planned = f" of {t['epochs']} planned" if t.get("epochs") not in (None, card["epochs_run"]) else ""
            parts.append(f"{card['epochs_run']}{planned} epochs")
        budget = [f"{card[k]} {w}" for k, w in (("optimiser_steps", "optimiser steps"), ("samples_seen", "samples seen"))
                  if k in card]
        if budget:
            parts.append(", ".join(budget))
        text = "It was trained" + (f" {on}" if on else "") + (f" for {parts[0]}" if parts else "")
        if len(parts) > 1:
            text += f" ({parts[1]})"
        opt = []
        if t.get("optimiser"):
            name = _OPTIMISERS.get(t["optimiser"], t["optimiser"])
            if t["optimiser"] == "sgd" and t.get("momentum"):
                name += f" with Nesterov momentum {_fmt(float(t['momentum']))}"
            opt.append(name)
        if "lr" in t:
            opt.append(f"learning rate {_fmt(float(t['lr']))}" + (f" ({t['schedule']} schedule)" if t.get("schedule")
                                                                  else ""))
        if "batch_size" in t:
            opt.append(f"batch size {t['batch_size']}")
        if t.get("weight_decay"):
            opt.append(f"weight decay {_fmt(float(t['weight_decay']))}")
        if opt:
            text += " with " + ", ".join(opt)
        extra = []
        if "n_parameters" in card:
            extra.append(f"{card['n_parameters']} parameters")
        if card.get("device"):
            extra.append(_device(str(card["device"])))
        if "seed" in card:
            extra.append(f"seed {card['seed']}")
        if extra:
            text += f" ({', '.join(extra)})"
        text += "."
        score = card.get("validation_score")
        if isinstance(score, dict) and "value" in score:
            name = score.get("name", "score")
            text += (f" The weights of epoch {score.get('epoch', '?')} were kept, selected by the validation {name} "
                     f"({_fmt(float(score['value']))}")
            if isinstance(score.get("start"), (int, float)):
                text += f"; untrained network: {_fmt(float(score['start']))}"
            text += ")."
        if card.get("beats_start") is False:
            text += (" The selected weights did not improve on the untrained network: this method did not learn, "
                     "and its scores are not counted as beating any other method.")
        trained = (card.get("provenance") or {}).get("packages") or {}
        differ = [f"{LIBRARIES[d][0]} {v}" for d, v in trained.items()
                  if d in LIBRARIES and v and versions.get(d) not in (None, v)]
        if differ:
            text += f" Its training ran under {_join(differ)}, other versions than the ones stated here."
        return text
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CitationError(f"{path}: not a model card the methods text can state ({type(exc).__name__}: {exc})") \
            from None


def _cohort_paragraph(man: dict, versions: dict, refs: _Refs) -> str:
    c, n = man.get("cohort") or {}, man.get("subjects") or {}
    total = sum(n.get(k, 0) for k in ("train", "val", "test"))
    text = f"A cohort of {total} subjects"
    if total:
        text += f" ({n.get('train', 0)} train, {n.get('val', 0)} validation, {n.get('test', 0)} test)"
    if n.get("age_only"):
        text += f", plus {n['age_only']} subjects used only to fit and validate the brain-age models,"
    if c.get("age_range"):
        lo, hi = c["age_range"]
        text += f" aged {_fmt(lo)} to {_fmt(hi)} years (uniform)"
    text += (f" was simulated with mrichain {man.get('mrichain') or versions.get('mrichain')} from the MNI152 "
             f"nonlinear 2009 template {refs('fonov2009unbiased', 'fonov2011unbiased')} and its tissue probability "
             f"maps as distributed with {_library('nilearn', versions, refs)}")
    if c.get("resolution_mm"):
        text += f", at {_fmt(c['resolution_mm'])} mm isotropic resolution"
    text += ". Each subject's anatomy is the template under a smooth random diffeomorphic warp"
    warp = c.get("warp") or {}
    if warp.get("max_displacement_mm"):
        text += f" (up to {_fmt(warp['max_displacement_mm'])} mm)"
    text += ", with age-dependent atrophy (ventricular expansion and cortical grey-matter loss"
    atrophy = c.get("atrophy") or {}
    if atrophy.get("brain_age_gap_sd_years"):
        text += f"; brains of one age differ by a brain-age gap of SD {_fmt(atrophy['brain_age_gap_sd_years'])} years"
    text += "), per-subject variation of the tissues' T1, T2 and proton density"
    if c.get("tissue_variation_cv"):
        text += f" (coefficient of variation {_fmt(c['tissue_variation_cv'])})"
    text += " and a smooth multiplicative bias field"
    bias = c.get("bias_field") or {}
    if bias.get("max_amplitude"):
        text += f" (amplitude up to {_fmt(bias['max_amplitude'])})"
    text += f". Every random draw derives from the seed {man.get('seed')}, so the cohort is reproduced byte for byte."
    return text


def _acquisition_paragraph(man: dict, refs: _Refs) -> str:
    from mrichain.plan.stages import stage

    a = man.get("acquire") or {}
    contrast = a.get("contrast", "T1w")
    seq = (a.get("sequence") or {}).get(contrast) or {}
    kind = {"T1w": "spoiled gradient echo", "T2w": "spin echo"}.get(contrast, "")
    text = f"Multi-coil Cartesian k-space of a {contrast} {kind} image".replace("  ", " ")
    if seq:
        text += " (" + ", ".join(f"{k.split('_')[0].upper() if k != 'flip_deg' else 'flip angle'} "
                                 f"{_fmt(v)}{' ms' if k.endswith('_ms') else '°' if k.endswith('_deg') else ''}"
                                 for k, v in seq.items()) + ")"
    text += " was simulated from each subject's ground truth"
    if a.get("n_coils"):
        text += f" for {a['n_coils']} receive coils"
    if a.get("snr"):
        text += f", with complex Gaussian noise at a mean brain SNR of {_fmt(a['snr'])}"
    accs = a.get("accelerations") or []
    if accs:
        cfs = a.get("center_fractions") or [None] * len(accs)
        shown = [f"R = {_fmt(r)}" + (" (fully sampled)" if r == 1 else f" (centre fraction {_fmt(cf)})" if cf else "")
                 for r, cf in zip(accs, cfs)]
        text += f". It was undersampled with fastMRI's {a.get('mask', 'equispaced')} mask function at {_join(shown)}"
    text += f" and stored in the fastMRI HDF5 layout {refs(*stage('acquire').cite)}."
    return text


def _stage_paragraph(name: str, entry: dict, versions: dict, refs: _Refs) -> str:
    from mrichain.plan.stages import stage

    s = stage(name)
    ran = set(entry.get("methods") or [])
    methods = [m for m in s.methods if m.name in ran]
    unknown = sorted(ran - {m.name for m in s.methods})
    if unknown:
        raise CitationError(f"stage {name}: the manifest names methods it does not declare: {', '.join(unknown)}")
    intro = _STAGE_INTROS.get(name, "")
    if "{cite}" in intro:
        intro = intro.format(cite=refs(*s.cite))
    elif s.cite:
        intro += f" {refs(*s.cite)}"
    sentences = [intro] if intro else []
    sentences.append(f"{_count(len(methods), 'method')} ran side by side on the same inputs.")
    # a learned method trains on the stage's train-split items, or only on cohort-level files
    # (MR fingerprinting's DRONE: the dictionary, which its description names)
    on = "on the train split" if (s.train_reads or any(m.train_reads for m in methods)) else ""
    floors = [_SCORED_FLOORS.get(f, f) for f in s.scored_floors]
    for m in methods:
        sentences.append(_method_sentence(name, m, versions, refs, entry.get("feed")))
        if m.name in (entry.get("tuning") or {}):
            sentences.append(_tuning_sentence(entry["tuning"][m.name], name, m.name))
        elif not m.learned and m.tunable:
            params = (entry.get("params") or {}).get(m.name) or {}
            sentences.append(f"It was not tuned: {_assignments(params)}." if params
                             else "It was not tuned: its default parameters were used.")
        if m.name in (entry.get("models") or {}):
            sentences.append(_training_sentence(entry["models"][m.name], versions, on))
    if floors:
        sentences.append(f"As a further floor, {_join(floors)} was scored beside them.")
    return " ".join(sentences)


def _scoring_paragraph(man: dict, versions: dict, refs: _Refs) -> str:
    eb = man.get("error_budget") or {}
    text = ("Every method was scored against the simulated ground truth: reconstructions by NMSE, PSNR and SSIM "
            f"as fastMRI defines them {refs('zbontar2018fastmri')}, against the noisy fully sampled "
            "root-sum-of-squares image and against the noise-free image inside the brain mask, with "
            f"{_library('scikit-image', versions, refs)}; denoised images by PSNR and SSIM against the noise-free "
            "image; registrations by the Dice overlap of the carried tissue labels with the template's and the "
            "fraction of voxels with a non-positive Jacobian determinant; segmentations by Dice and the 95th "
            f"percentile Hausdorff distance per tissue, with {_library('monai', versions, refs)}; brain age by the "
            "mean absolute error in years. Means over subjects are given with 95 % bootstrap confidence intervals, "
            f"and paired differences between methods with theirs, computed with {_library('scipy', versions, refs)}; "
            "a method is said to beat another only where the interval of the difference excludes zero.")
    budget = []
    if eb.get("sweep"):
        budget.append("at the outputs of every reconstruction method (an acceleration sweep)")
    if eb.get("oracle"):
        budget.append("on their ideal inputs (the noise-free image, the true labels: an oracle)")
    if budget:
        text += (" To apportion each stage's error to the stages upstream, the stages after reconstruction also ran "
                 f"on the test split {_join(budget)}.")
    return text


def _real_paragraph(real: dict, versions: dict, refs: _Refs) -> str:
    n, kind = real.get("n_inputs", 0), real.get("kind")
    if kind == "fastmri":
        accs = real.get("accelerations") or {}
        shown = _join([f"R = {_fmt(v[0])} (centre fraction {_fmt(v[1])})" for v in accs.values()])
        return (f"The methods fitted on the simulated cohort were applied to {n} fastMRI k-space file"
                f"{'s' if n != 1 else ''} {refs('zbontar2018fastmri')}" + (
                    f", undersampled retrospectively at {shown}," if shown else "")
                + f" through the stages {_join(real.get('stages') or [])}; the reconstructions were scored against "
                "each file's reconstruction_rss.")
    return (f"The methods fitted on the simulated cohort were applied to {n} T1w image{'s' if n != 1 else ''} of a "
            "BIDS dataset. Each was reoriented to RAS+, corrected for intensity non-uniformity with N4 "
            f"{refs('tustison2010n4')} in {_library('antspyx', versions, refs)}, skull-stripped with a Python port "
            f"of BET {refs('smith2002fast')} unless a brain mask was given, and resampled to "
            f"{_fmt(real.get('voxel_mm'))} mm; it then went through the stages {_join(real.get('stages') or [])}, "
            "and each output was resampled back onto the input's grid and voxel order and written as a BIDS "
            "derivative.")


def _software_paragraph(versions: dict, refs: _Refs) -> str:
    text = (f"The workflow ran with {_library('snakemake', versions, refs)}; images were read and written with "
            f"{_library('nibabel', versions, refs)}, arrays handled with {_library('numpy', versions, refs)}")
    if versions.get("dvc", "not installed") != "not installed":
        text += f"; the cohort, models and results are versioned with {_library('dvc', versions, refs)} (dvc.yaml)"
    return text + "."


def methods_text(manifest: dict, versions: dict | None = None) -> tuple[str, list[str]]:
    """The Markdown methods text of a run's manifest (module docstring) and the citation keys it
    cites, in order of first citation. Cards are read from the manifest's paths;
    :class:`CitationError` names one that is missing or unreadable."""
    from mrichain.plan.stages import ALL_STAGES

    versions = {**library_versions(), **(versions or {})}
    refs = _Refs()
    stages = manifest.get("stages")
    if not isinstance(stages, dict):
        raise CitationError("the manifest has no 'stages' mapping")
    out = ["# Methods", "",
           (f"*Generated by mrichain {versions['mrichain']} (`mrichain citation`) from the run's configuration and "
            "the cards of its tuned and trained methods, to be copied into a manuscript's methods section and edited "
            "as needed. Citations are pandoc keys (`[@key]`) into `CITATION.bib` beside this file.*"), ""]
    out += ["## Simulated cohort", "", _cohort_paragraph(manifest, versions, refs), ""]
    out += [f"## {STAGE_TITLES['acquire']}", "", _acquisition_paragraph(manifest, refs), ""]
    for s in ALL_STAGES:
        if s.name in stages and stages[s.name].get("methods"):
            out += [f"## {STAGE_TITLES.get(s.name, s.name.capitalize())}", "",
                    _stage_paragraph(s.name, stages[s.name], versions, refs), ""]
    out += ["## Scoring and statistics", "", _scoring_paragraph(manifest, versions, refs), ""]
    if manifest.get("real"):
        out += ["## Real inputs", "", _real_paragraph(manifest["real"], versions, refs), ""]
    out += ["## Software", "", _software_paragraph(versions, refs), "",
            "| library | version |", "|---|---|"]
    out += [f"| {LIBRARIES[d][0]} | {versions[d]} |" for d in LIBRARIES]
    return "\n".join(out) + "\n", refs.keys


def bibtex(keys, versions: dict | None = None) -> str:
    """The BibTeX entries of ``keys`` (in that order); software entries with a concept DOI get the
    installed version as their ``version`` field."""
    versions = {**library_versions(tuple(_VERSIONED_ENTRIES.values())), **(versions or {})}
    entries = []
    for key in keys:
        entry = BIBTEX[key]
        dist = _VERSIONED_ENTRIES.get(key)
        if dist and versions.get(dist, "not installed") != "not installed":
            head, _, rest = entry.partition("\n")
            entry = f"{head}\n  version = {{{versions[dist]}}},\n{rest}"
        entries.append(entry)
    return "\n\n".join(entries) + "\n"


BIB_ENTRY = re.compile(r"^@(\w+)\{([^,\s]+),", re.MULTILINE)
"""The head of a BibTeX entry: ``@type{key,`` (type, key)."""


def write_citation(manifest: dict, out_md, out_bib) -> list[str]:
    """Write ``CITATION.md`` (:func:`methods_text`) and ``CITATION.bib`` (exactly the cited
    entries) of a run's manifest; return the cited keys. Both are written only once every card
    has been read."""
    versions = library_versions()
    text, keys = methods_text(manifest, versions)
    _write_text(text, out_md)
    _write_text(bibtex(keys, versions), out_bib)
    return keys


def _write_text(text: str, path) -> None:
    """Write ``path`` atomically (a temporary file beside it, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
